from screenlib.cli import main

main()
