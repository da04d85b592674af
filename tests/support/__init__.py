"""What the tests share and no test runs: fakes for what cannot exist here (a Kubernetes API, a
vLLM replica, Dagster's GraphQL), live-server helpers, test projects and fixture files."""
