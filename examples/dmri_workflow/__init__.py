"""The DIPY diffusion MRI study: synthetic data, the workflow and its CLI."""
