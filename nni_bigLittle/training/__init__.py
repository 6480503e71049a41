"""The training recipe shared by baselines, trials and fine-tuning."""
