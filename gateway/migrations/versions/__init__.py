"""One revision per schema change, oldest first: 0001 is the schema the gateway began with."""
