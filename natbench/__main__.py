from natbench.cli import main

main()
