"""Model: the backbones table, the classifier builder, the fine-tuning phases and the feature cache."""
