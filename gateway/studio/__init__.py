"""The Studio: self-service datasets, trainings, runs and results for project members."""
