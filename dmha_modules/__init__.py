"""SpeechBrain modules for Double Multi-Head Attention speaker and age models."""
