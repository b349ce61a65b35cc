"""Notifications: ticket events, the channels they go to, and their durable delivery."""
