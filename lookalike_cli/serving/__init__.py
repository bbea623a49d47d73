"""Front ends that strangers reach: the HTTP API with its web page, and the Telegram bot."""
