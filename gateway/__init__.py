"""The OpenAI-compatible gateway: a separate service in front of the vLLM deployments.

protocol.py (wire format) / serving.py (logic, no HTTP) / routers.py (HTTP only) / app.py
(wiring), after vLLM's own entrypoint layout; db.py, auth.py, ratelimit.py, upstream.py and
metrics.py are the parts a production gateway needs around them.
"""
