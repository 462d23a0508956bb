"""The prior: noise schedules, the guided-diffusion U-Net, training and sampling."""
