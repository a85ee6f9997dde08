"""The pipeline's stages: teachers, merge, prune, finetune, evaluate."""
