from incident_responder.cli import main

main()
