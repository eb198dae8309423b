"""Security beside the request stack: the authorizer and its ACLs, client quotas.

Used by `server/` (throttling) and `api/` (authorization); nothing below `api/` knows about
principals.
"""
