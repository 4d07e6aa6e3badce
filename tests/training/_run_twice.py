"""``medclf ARGS...`` twice in this process (a run, then its resume): one torchrun launch covers both.

tests/training/test_ddp.py starts it under torchrun; two launches would import torch and timm twice as often.
"""


from medclf.cli import main

for _ in range(2):
    try:
        main()  # reads sys.argv, as the console script does
    except SystemExit as done:  # typer ends every command with one
        if done.code:
            raise
