"""The medical knowledge base: corpus loaders, embeddings, the Qdrant index and retrieval."""
