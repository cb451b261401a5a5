"""The kernel an image needs: its config requests and checks, its build, booting it."""
