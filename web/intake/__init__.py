"""The intake: a request's form parsed into one typed JobRequest, and zips unpacked under a budget this server
counts."""
