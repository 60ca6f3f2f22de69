"""Neural-network building blocks: features, masks, front-ends, pooling, heads, losses and the embedding models."""
