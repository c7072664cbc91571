"""The intake: who a request comes from and whether it is within its client's rate limit, its form parsed into one
typed JobRequest, its large files spooled to UPLOAD_FOLDER, and zips unpacked under a budget this server counts."""
