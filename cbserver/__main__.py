from cbserver.cli import main

main()
