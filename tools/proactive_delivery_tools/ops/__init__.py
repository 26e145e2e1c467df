"""The operators' commands, by job: status, show, replay, resend, switch (pause/resume).
Their command line (argument parsing and rendering) is proactive_delivery_tools.cli.ops."""
