from imgclass_cli.cli import main

main()
