"""Sites, cameras, classifiers, groups and images: curation, triage, duplicates, embeddings, retention, pages."""
