from saelib.cli import main

main()
