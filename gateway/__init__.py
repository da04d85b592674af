"""The OpenAI-compatible gateway: a separate service in front of the vLLM deployments.

protocol.py (wire format) / bodies.py (reading and parsing bodies defensively) / serving.py
(logic, no HTTP) / routers.py (the /v1 HTTP surface) / admin.py (the admin API) / app.py
(wiring), after vLLM's own entrypoint layout; db.py, tenancy.py (who may call what),
admission.py + ratelimit.py (what a request must get past before work), upstream.py, audit.py
and metrics.py are the parts a production gateway needs around them.
"""
