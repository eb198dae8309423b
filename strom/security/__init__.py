"""Security beside the layer stack: TLS contexts (tls.py), SASL mechanisms (plain.py,
scram.py, oauthbearer.py, with JAAS option parsing in jaas.py and SCRAM credentials in
credentials.py), and the client side of inter-broker security (inter_broker.py).

Used by `server/` (authentication of connections) and `api/` (credential administration);
nothing below `api/` knows about principals."""
