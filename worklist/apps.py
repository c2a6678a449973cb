from django.apps import AppConfig


class WorklistConfig(AppConfig):
    """Orders, requested procedures and scheduled procedure steps."""

    name = "worklist"
    verbose_name = "Worklist"

    def ready(self) -> None:
        # Modality Worklist C-FIND and MPPS join the one DIMSE listener of pacs.
        from dicomnet import wire
        from dicomnet.registry import Extension, register
        from worklist import dimse

        register(Extension(
            abstract_syntaxes=(dimse.MWL_FIND, dimse.MPPS, *dimse.UPS_CLASSES),
            find={dimse.MWL_FIND: dimse.make_mwl_service,
                  dimse.UPS_PULL: dimse.make_ups_find_service,
                  dimse.UPS_QUERY: dimse.make_ups_find_service,
                  dimse.UPS_WATCH: dimse.make_ups_find_service},
            services={wire.N_CREATE_RQ: dimse.make_ncreate_service,
                      wire.N_SET_RQ: dimse.make_nset_service,
                      wire.N_GET_RQ: dimse.make_nget_service,
                      wire.N_ACTION_RQ: dimse.make_naction_service},
            extended={dimse.MWL_FIND: dimse.MWL_EXTENDED_SUPPORT},
        ))
        # every change of a step, from any face, is a UPS event for its subscribers
        from worklist import ups_events
        from worklist.signals import step_assigned, step_created, step_status_changed

        step_status_changed.connect(ups_events.on_step_status_changed, dispatch_uid="ups-events")
        step_created.connect(ups_events.on_step_created, dispatch_uid="ups-events-created")
        step_assigned.connect(ups_events.on_step_assigned, dispatch_uid="ups-events-assigned")
        from core.signals import deliveries_due

        deliveries_due.connect(ups_events.resume_pending, dispatch_uid="ups-events-resume")
