"""Lightning training of grouped networks (teachers, students, masked finetuning)."""
