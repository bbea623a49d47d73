"""Running work: worker processes that outlive a task gone wrong, and the engines that map work over them
or over a Ray cluster."""
