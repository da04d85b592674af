"""Reading user data (local or S3 files, Hugging Face datasets, documents) with provenance."""
