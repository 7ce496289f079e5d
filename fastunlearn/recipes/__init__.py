"""Recipes: end-to-end jobs that join training (engine/) and evaluation (eval/).

demo               ``fastunlearn demo``: evaluate, unlearn with the bundled demo config, report
copyright          implant a text with LoRA, unlearn it, measure leakage at each stage
copyright_config   the copyright recipe's settings (light: read by the command line)
"""
