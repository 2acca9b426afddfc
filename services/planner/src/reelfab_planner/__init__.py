"""planner: Templates, music, trends and policy in; swap jobs out."""
