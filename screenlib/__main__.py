from screenlib.cli import console_main

console_main()
