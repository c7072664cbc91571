"""The intake: a request's form parsed into one typed JobRequest, its large files spooled to UPLOAD_FOLDER, and zips
unpacked under a budget this server counts."""
