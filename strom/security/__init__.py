"""Security beside the layer stack: TLS contexts (tls.py), SASL mechanisms (plain.py,
scram.py, oauthbearer.py, with JAAS option parsing in jaas.py and SCRAM credentials in
credentials.py), the client side of inter-broker security (inter_broker.py), the
authorizer and its ACLs (acls.py, authorizer.py) and client quotas (quotas.py).

Used by `server/` (authentication of connections, throttling) and `api/` (authorization,
credential and quota administration); nothing below `api/` knows about principals."""
