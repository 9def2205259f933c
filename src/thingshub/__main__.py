from thingshub.cli import main

main()
