"""reverser's service: folders, queues, schedules and signals around the unet package."""
