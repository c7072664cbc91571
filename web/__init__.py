"""The web service's parts that are not routes: jobs and their files, the model's readiness. No Flask here."""
