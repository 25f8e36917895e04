"""search: an Optuna space over peft_space's dimensions, run on Ray Tune with ASHA; records to MLflow."""
