"""Lightning callbacks: gradient-estimate quality, temperature schedules, image logging."""
