from nmcm_deploy.cli import main

main()
