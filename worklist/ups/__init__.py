"""Scheduled procedure steps as UPS workitems (PS3.4 annex CC; IHE EBIW's MWL-to-UPS mapping).

There is no second store: a workitem is a ScheduledProcedureStep seen through the UPS state
model, and every state change goes through ``services.set_step_status`` like MPPS and the
portal, so MWL, MPPS, HL7 and the pages see it at once.

UPS states and step statuses:

| UPS            | step                             |
| -------------- | -------------------------------- |
| SCHEDULED      | SCHEDULED, ARRIVED               |
| IN PROGRESS    | IN PROGRESS                      |
| COMPLETED      | COMPLETED                        |
| CANCELED       | CANCELED, DISCONTINUED           |

Modules: ``states`` (the state model and Change Workitem State), ``rendering`` (a workitem as
DICOM JSON), ``changes`` (create, update, request cancellation), ``lookup`` (search through
the shared query engine), ``tags`` (the attributes' DICOM JSON keys).
"""
