from sherwood.cli import main

main()
