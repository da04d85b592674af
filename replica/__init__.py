"""What runs inside a vLLM replica: the LoRA resolver that serves adapters from the object store
(installed into the serving environment; vLLM loads it through its plugin entry point)."""
