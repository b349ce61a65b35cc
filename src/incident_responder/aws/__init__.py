"""Running the service on AWS Lambda (``deploy/aws/template.yaml``): the handlers of
:mod:`.handler` and the serving install of :mod:`.serving_requirements`."""
