"""The HL7 gateway from outside: real messages (../shared/testdata/hl7) sent over MLLP with
python-hl7's client to the real listener; the orders must then be in the worklist (MWL)."""

from __future__ import annotations

import socket

import pytest
from hl7.client import MLLPClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind as MWL

from hl7gw.models import Message, Sender
from pacs.models import ApplicationEntity, Patient
from tests.protocol.dimse.test_worklist import findscu_w
from tests.samples import shared_testdata
from tests.waiting import wait_until
from worklist.models import Order, ScheduledProcedureStep, Station

pytestmark = pytest.mark.interop


@pytest.fixture
def hl7(transactional_db, hl7_senders):
    from hl7gw.mllp import MllpListener

    listener = MllpListener(host="127.0.0.1", port=0)
    listener.start()
    yield listener
    listener.stop()


@pytest.fixture(scope="module")
def samples():
    return shared_testdata("hl7")


def send(listener, payload: bytes, acks: int = 1) -> list[str]:
    """One MLLP frame; the ACK frames that come back, decoded."""
    with MLLPClient(*listener.address) as client:
        client.socket.sendall(b"\x0b" + payload + b"\x1c\r")
        data = b""
        while data.count(b"\x1c\r") < acks:
            chunk = client.socket.recv(65536)
            assert chunk, "connection closed before the ACK"
            data += chunk
    return [f.strip(b"\x0b").decode("latin-1") for f in data.split(b"\x1c\r") if f.strip()]


def msa(ack: str) -> list[str]:
    segment = next(s for s in ack.split("\r") if s.startswith("MSA"))
    return segment.split("|")


def err(ack: str) -> str:
    return next((s for s in ack.split("\r") if s.startswith("ERR")), "")


def load(samples, name: str) -> bytes:
    return (samples / name).read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def test_orm_o01_ihe_rad4_creates_an_order_the_modality_finds(hl7, samples, dimse_listener,
                                                              tmp_path):
    (ack,) = send(hl7, load(samples, "dcm4che_ORM_O01_v231_ihe_rad4.hl7"))
    assert msa(ack)[1:3] == ["AA", "103106"]
    assert "ACK^O01" in ack.split("\r")[0]
    order = Order.objects.get(accession_number="MOF5026")
    step = ScheduledProcedureStep.objects.get(requested_procedure__order=order)
    rp = step.requested_procedure
    assert (rp.requested_procedure_id, step.scheduled_procedure_step_id, step.modality) == (
        "RP1026", "SPS2032", "MR")
    assert rp.study_instance_uid == "1.113654.3.13.1026"
    assert (order.patient.patient_id, order.patient.issuer_of_patient_id,
            order.patient.patient_name) == ("583295", "ADT1", "DOE^J1")
    assert order.referring_physician_name == "NELL^FREDERICK^P^DR"
    message = Message.objects.get()
    assert message.status == "processed" and list(message.orders.all()) == [order]
    assert bytes(message.raw).startswith(b"MSH|^~\\&|MESA_OF")
    # The modality sees it (MWL C-FIND through the DIMSE listener).
    ApplicationEntity.objects.create(ae_title="MR1", host="127.0.0.1", port=104,
                                     may_query_worklist=True)
    query = Dataset()
    query.AccessionNumber = "MOF5026"
    query.PatientName = ""
    query.ScheduledProcedureStepSequence = [Dataset()]
    ae = AE(ae_title="MR1")
    ae.add_requested_context(MWL)
    assoc = ae.associate(*dimse_listener.address, ae_title="PORTAL")
    try:
        found = [a for s, a in assoc.send_c_find(query, MWL) if s.Status == 0xFF00]
    finally:
        assoc.release()
    assert [str(a.PatientName) for a in found] == ["DOE^J1"]
    # and DCMTK's worklist client finds it too
    item = Dataset()
    item.ScheduledProcedureStepID = item.Modality = ""
    query.ScheduledProcedureStepSequence = [item]
    query.file_meta = FileMetaDataset()
    query.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    query.file_meta.MediaStorageSOPClassUID = MWL
    query.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    query.save_as(tmp_path / "q.dcm", enforce_file_format=True)
    (answer,) = findscu_w(dimse_listener, tmp_path / "q.dcm", tmp_path / "out", calling="MR1")
    assert answer.AccessionNumber == "MOF5026" and str(answer.PatientName) == "DOE^J1"
    sps = answer.ScheduledProcedureStepSequence[0]
    assert (sps.ScheduledProcedureStepID, sps.Modality) == ("SPS2032", "MR")


def test_omi_o23_with_ipc(hl7, samples):
    (ack,) = send(hl7, load(samples, "dcm4che_OMI_O23_v251_ipc.hl7"))
    assert msa(ack)[1] == "AA"
    step = ScheduledProcedureStep.objects.get(
        requested_procedure__order__accession_number="ACC")
    assert (step.modality, step.scheduled_station_ae_title, step.scheduled_station_name,
            step.scheduled_procedure_step_location, step.scheduled_procedure_step_id) == (
        "CT", "MODALITY", "ScheduledStation", "ScheduledProcedu", "SPSID")  # SH: 16 chars
    assert step.protocol_code_value == "ProtocolCode"
    assert (step.start_date, step.start_time) == ("20000816", "151000")  # TQ1-7
    assert step.requested_procedure.study_instance_uid == "1.2.392.200036.9125.0.199402091242.1"


def test_omi_two_station_aets_and_charset_mismatch(hl7, samples):
    (ack,) = send(hl7, load(samples, "dcm4che_OMI_O23_ImagingOrder_v251_charset_mismatch.hl7"))
    assert msa(ack)[1] == "AA", ack
    step = ScheduledProcedureStep.objects.get()
    assert "\\" in step.scheduled_station_ae_title  # both AE titles, as a DICOM multi-value


def test_unknown_segments_and_z_segments_do_not_break_processing(hl7, samples, settings):
    settings.HL7_ALLOW_UNKNOWN_SENDER = True  # the gender harmony samples name no sender
    (ack,) = send(hl7, load(samples, "hl7-gender-harmony_OMI_O23_v25_IPC_unknown_segments.hl7"))
    assert msa(ack)[1] == "AA", ack
    assert ScheduledProcedureStep.objects.get().modality == "PT"
    (ack,) = send(hl7, load(samples, "nhapi_ADT_A01_v21_with_Z_segment.hl7"))
    assert msa(ack)[1] == "AA", ack
    (ack,) = send(hl7, load(samples, "hl7-gender-harmony_ADT_A08_v25_name_change.hl7"))
    assert msa(ack)[1] == "AA", ack


def test_adt_update_merge_and_identifier_change(hl7, samples):
    (ack,) = send(hl7, load(samples, "dcm4che_ORM_O01_v231_ihe_rad4.hl7"))
    (ack,) = send(hl7, load(samples, "dcm4che_ADT_A08_v251.hl7"))  # no MSH-9.3: still A08
    assert msa(ack)[1] == "AA", ack
    assert Patient.objects.get(patient_id="583295").patient_name == "Smith^Shadow"
    # A40: the order of OLD_PID_1 follows the surviving NEW_PID_1
    Patient.objects.create(patient_id="OLD_PID_1", issuer_of_patient_id="ADT1")
    order = Order.objects.get()
    order.patient = Patient.objects.get(patient_id="OLD_PID_1")
    order.save()
    (ack,) = send(hl7, load(samples, "dcm4che_ADT_A40_PatientMerge_v251.hl7"))
    assert msa(ack)[1] == "AA", ack
    order.refresh_from_db()
    assert order.patient.patient_id == "NEW_PID_1"
    assert not Patient.objects.filter(patient_id="OLD_PID_1").exists()
    # A47: NEW_PID_1 is not OLD_PID_1 any more -> unknown key; after renaming back, it works
    (ack,) = send(hl7, load(samples, "dcm4che_ADT_A47_ChangePatientID_v251.hl7"))
    assert msa(ack)[1] == "AE" and "204" in err(ack)
    Patient.objects.filter(patient_id="NEW_PID_1").update(patient_id="OLD_PID_1")
    (ack,) = send(hl7, load(samples, "dcm4che_ADT_A47_ChangePatientID_v251.hl7"))
    assert msa(ack)[1] == "AA", ack
    order.refresh_from_db()
    assert order.patient.patient_id == "NEW_PID_1"


def test_cancel_of_an_unknown_order_is_ae_with_reason_and_raw_kept(hl7, samples):
    raw = (samples / "mesa_ORM_O01_v22_cancel_OC.hl7").read_bytes()  # LF separators
    (ack,) = send(hl7, raw)
    assert msa(ack)[1] == "AE"
    assert "204" in err(ack) and "no order" in ack
    message = Message.objects.get()
    assert message.status == "error" and bytes(message.raw) == raw  # byte for byte
    assert "no order" in message.error and message.ack.startswith("MSH")


def test_nw_then_cancel_by_placer_number(hl7, samples):
    nw = load(samples, "dcm4che_ORM_O01_v231_ihe_rad4.hl7")
    send(hl7, nw)
    cancel = nw.replace(b"ORC|NW|", b"ORC|CA|").replace(b"|103106|", b"|103107|")
    (ack,) = send(hl7, cancel)
    assert msa(ack)[1:3] == ["AA", "103107"]
    assert ScheduledProcedureStep.objects.get().status == "CANCELED"
    (ack,) = send(hl7, nw)  # the same accession again
    assert msa(ack)[1] == "AE" and "205" in err(ack)


def test_batch_and_back_to_back_messages_get_one_ack_each(hl7, samples):
    (batch,) = send(hl7, load(samples, "python-hl7_ADT_A04_batch_BHS_BTS.hl7"))
    assert batch.startswith("BHS|^~\\&") and batch.rstrip("\r").endswith("BTS|1")
    assert ack_count(batch) == 1 and msa(batch)[1:3] == ["AA", "12334456778890"]
    (pair,) = send(hl7, load(samples, "python-hl7_ADT_A04_two_messages_no_batch_header.hl7"))
    assert ack_count(pair) == 2 and "BHS" not in pair
    assert Message.objects.filter(status="processed").count() == 3


def ack_count(frame: str) -> int:
    return sum(1 for s in frame.split("\r") if s.startswith("MSA"))


def test_bad_input_gets_ar_and_the_listener_lives(hl7, samples):
    (ack,) = send(hl7, b"this is not HL7 at all\r")
    assert msa(ack)[1] == "AR" and "MSH" in ack
    (ack,) = send(hl7, b"MSH|^~\\&|A|B|C|D|||ORU^R01|X1|P|2.5\rPID|||1\r")
    assert msa(ack)[1:3] == ["AR", "X1"] and "200" in err(ack)
    (ack,) = send(hl7, b"MSH|^~\\&|A|B|C|D|||ADT^A99|X2|P|2.5\rPID|||1\r")
    assert msa(ack)[1] == "AR" and "201" in err(ack)
    (ack,) = send(hl7, b"MSH|^~\\&|A|B|C|D|||ADT^A08|X3|P|9.9\rPID|||1\r")
    assert msa(ack)[1] == "AR" and "203" in err(ack)
    (ack,) = send(hl7, b"MSH|^~\\&|A|B|C|D|||ADT^A08|X4|P|2.5\rPID||||||\r")
    assert msa(ack)[1] == "AE" and "101" in err(ack) and "PID-3" in ack
    # bytes outside any frame, then a truncated frame: answered / kept, listener alive
    with socket.create_connection(hl7.address) as sock:
        sock.sendall(b"garbage\r\x0bMSH|^~\\&|A|B")
        reply = sock.recv(65536)
    assert b"MSA|AR" in reply
    # the listener keeps the truncated frame after our close
    wait_until(Message.objects.filter(error__contains="closed before the end").exists, 10, 0.05,
               "the truncated frame in the log")
    assert Message.objects.filter(error__contains="closed before the end").count() == 1
    assert Message.objects.filter(status="rejected").count() == 6  # 4 above, stray, truncated
    (ack,) = send(hl7, load(samples, "dcm4che_ORM_O01_v231_ihe_rad4.hl7"))
    assert msa(ack)[1] == "AA"


@pytest.mark.parametrize("charset,codec", [("8859/1", "latin-1"), ("UNICODE UTF-8", "utf-8")])
def test_names_in_the_declared_charset_reach_the_worklist(hl7, samples, charset, codec):
    nw = load(samples, "dcm4che_ORM_O01_v231_ihe_rad4.hl7").decode("ascii")
    segments = nw.split("\r")
    msh = segments[0].split("|")
    msh[17] = charset
    segments[0] = "|".join(msh)
    segments[1] = segments[1].replace("DOE^J1", "MÜLLER^JÖRG")
    (ack,) = send(hl7, "\r".join(segments).encode(codec))
    assert msa(ack)[1] == "AA", ack
    assert Patient.objects.get(patient_id="583295").patient_name == "MÜLLER^JÖRG"


@pytest.mark.parametrize("charset,hexed", [("8859/1", "C9"), ("UNICODE UTF-8", "C389")])
def test_hex_escapes_are_decoded_in_the_messages_charset(hl7, samples, charset, hexed):
    """HL7 v2.5 2.7.5: \\Xhh..\\ is hexadecimal data in the message's character set; the
    worklist gets the decoded name, with no backslash to split it into DICOM values."""
    nw = load(samples, "dcm4che_ORM_O01_v231_ihe_rad4.hl7").decode("ascii")
    segments = nw.split("\r")
    msh = segments[0].split("|")
    msh[17] = charset
    segments[0] = "|".join(msh)
    segments[1] = segments[1].replace("DOE^J1", f"SMITH^M\\X{hexed}\\LANIE^^MRS")
    (ack,) = send(hl7, "\r".join(segments).encode("ascii"))
    assert msa(ack)[1] == "AA", ack
    # XPN-4 is the suffix, the fifth DICOM PN component
    assert Patient.objects.get(patient_id="583295").patient_name == "SMITH^MÉLANIE^^^MRS"


def test_an_escaped_backslash_is_refused_not_split_into_values(hl7, samples):
    """A decoded \\E\\ is a backslash, the separator of DICOM values (PS3.5 6.4): the
    message gets AE naming the field, nothing is applied, and its text is kept."""
    nw = load(samples, "dcm4che_ORM_O01_v231_ihe_rad4.hl7").decode("ascii")
    (ack,) = send(hl7, nw.replace("DOE^J1", "DOE\\E\\SMITH^J1").encode("ascii"))
    assert msa(ack)[1] == "AE" and "PID-5" in ack and "backslash" in ack
    assert not Order.objects.exists()
    assert b"DOE\\E\\SMITH" in bytes(Message.objects.get().raw)


def test_every_order_group_of_a_message_becomes_an_order(hl7, samples):
    """ORM^O01 and OMI^O23 repeat the order group ({ORC [TQ1] OBR [IPC] ...}) under one patient
    (HL7 v2.5 4.4.1, IHE RAD-4): every group becomes an order, in one transaction."""
    orm = load(samples, "dcm4che_ORM_O01_v231_ihe_rad4.hl7").decode("ascii").strip("\r")
    segments = orm.split("\r")
    group = [s for s in segments if s[:3] in ("ORC", "OBR", "ZDS")]
    second = "\r".join(group).replace("A103Z", "A104Z").replace("B103Z", "B104Z").replace(
        "MOF5026", "MOF5027").replace("1.113654.3.13.1026", "1.113654.3.13.1027").replace(
        "|MR|", "|CT|")
    (ack,) = send(hl7, (orm + "\r" + second + "\r").encode("ascii"))
    assert msa(ack)[1] == "AA", ack
    orders = {o.accession_number: o for o in Order.objects.all()}
    assert set(orders) == {"MOF5026", "MOF5027"}  # OBR-18
    steps = {s.requested_procedure.order.accession_number: s
             for s in ScheduledProcedureStep.objects.select_related("requested_procedure__order")}
    assert (steps["MOF5026"].modality, steps["MOF5027"].modality) == ("MR", "CT")
    assert {o.patient.patient_id for o in orders.values()} == {"583295"}
    omi = load(samples, "dcm4che_OMI_O23_v251_ipc.hl7").decode("ascii").strip("\r")
    segments = omi.split("\r")
    start = next(i for i, s in enumerate(segments) if s.startswith("ORC"))
    second = "\r".join(segments[start:]).replace("A100Z", "A101Z").replace(
        "B100Z", "B101Z").replace("IPC|ACC|", "IPC|ACC2|")
    (ack,) = send(hl7, (omi + "\r" + second + "\r").encode("ascii"))
    assert msa(ack)[1] == "AA", ack
    assert {"ACC", "ACC2"} <= set(Order.objects.values_list("accession_number", flat=True))


def test_a_message_whose_second_order_fails_applies_neither(hl7, samples):
    """All the orders of a message or none: the second group repeats the first's accession
    number, so the message gets AE and the first order is not kept either."""
    orm = load(samples, "dcm4che_ORM_O01_v231_ihe_rad4.hl7").decode("ascii").strip("\r")
    group = "\r".join(s for s in orm.split("\r") if s[:3] in ("ORC", "OBR", "ZDS"))
    (ack,) = send(hl7, (orm + "\r" + group + "\r").encode("ascii"))
    assert msa(ack)[1] == "AE", ack
    assert not Order.objects.exists()


def test_sender_settings_choose_the_accession_field_and_station(hl7, samples):
    Sender.objects.filter(sending_application="MESA_OF").update(
        accession_field="ORC-3", default_station_ae_title="MRSTATION")
    (ack,) = send(hl7, load(samples, "dcm4che_ORM_O01_v231_ihe_rad4.hl7"))
    assert msa(ack)[1] == "AA"
    step = ScheduledProcedureStep.objects.get()
    assert step.requested_procedure.order.accession_number == "B103Z"
    assert step.scheduled_station_ae_title == "MRSTATION"
    assert Message.objects.get().sender.sending_application == "MESA_OF"


def test_station_from_the_station_table_when_the_message_has_none(hl7, samples):
    Station.objects.create(ae_title="MR-ROOM-2", name="mr2", modality="MR")
    send(hl7, load(samples, "dcm4che_ORM_O01_v231_ihe_rad4.hl7"))
    assert ScheduledProcedureStep.objects.get().scheduled_station_ae_title == "MR-ROOM-2"


def test_a_message_that_cannot_be_stored_gets_ar_and_the_listener_lives(hl7, samples,
                                                                         monkeypatch):
    """The database failing under a message (here: writing its log row, after the order) costs
    an AR that asks for the message again, not the connection or the listener; nothing
    half-done is kept."""
    from django.db import OperationalError

    from core import statements

    payload = load(samples, "dcm4che_ORM_O01_v231_ihe_rad4.hl7")
    control_id = payload.split(b"\r")[0].split(b"|")[9].decode()
    real_insert = statements.insert

    def failing_insert(obj):
        if isinstance(obj, Message):
            raise OperationalError("disk I/O error")
        return real_insert(obj)

    monkeypatch.setattr(statements, "insert", failing_insert)
    with MLLPClient(*hl7.address) as client:
        client.socket.sendall(b"\x0b" + payload + b"\x1c\r")
        first = client.socket.recv(65536).decode("latin-1")
        assert msa(first)[1] == "AR" and "message not stored (OperationalError)" in first
        assert msa(first)[2] == control_id  # MSA-2 echoes MSH-10
        assert Message.objects.count() == 0 and Order.objects.count() == 0
        monkeypatch.setattr(statements, "insert", real_insert)
        client.socket.sendall(b"\x0b" + payload + b"\x1c\r")  # same connection, sent again
        second = client.socket.recv(65536).decode("latin-1")
    assert msa(second)[1] == "AA"
    assert Message.objects.get().status == Message.Status.PROCESSED
    assert Order.objects.count() == 1


def test_the_catalog_entry_is_the_one_of_the_ordered_code_and_scheme(hl7, samples):
    """OBR-4 is P1^Procedure 1^ERL_MESA; the catalog has P1 in two schemes."""
    from worklist.models import Procedure

    Procedure.objects.create(code_value="P1", coding_scheme_designator="AAA_OTHER",
                             code_meaning="A other P1", modality="MR")
    mesa = Procedure.objects.create(code_value="P1", coding_scheme_designator="ERL_MESA",
                                    code_meaning="Z MESA P1", modality="MR")
    payload = load(samples, "dcm4che_ORM_O01_v231_ihe_rad4.hl7")
    assert msa(send(hl7, payload)[0])[1] == "AA"
    assert ScheduledProcedureStep.objects.get().requested_procedure.procedure == mesa
    mesa.coding_scheme_designator = "99MESA"  # now neither is the ordered scheme: no guess
    mesa.save()
    ScheduledProcedureStep.objects.get().requested_procedure.order.delete()
    assert msa(send(hl7, payload)[0])[1] == "AA"
    rp = ScheduledProcedureStep.objects.get().requested_procedure
    assert rp.procedure is None
    assert (rp.code_value, rp.coding_scheme_designator) == ("P1", "ERL_MESA")  # as ordered


def test_name_repetitions_become_the_pn_component_groups(hl7, samples, dimse_listener):
    """HL7 XPN-8 (name representation code, table 0465) tells alphabetic, ideographic and
    phonetic writings of one name apart; DICOM keeps them as the three component groups of
    one PN value (PS3.5 6.2.1.1, the Japanese example of H.3.1), which the modality gets."""
    nw = load(samples, "dcm4che_ORM_O01_v231_ihe_rad4.hl7").decode("ascii")
    segments = nw.split("\r")
    msh = segments[0].split("|")
    msh[17] = "UNICODE UTF-8"
    segments[0] = "|".join(msh)
    segments[1] = segments[1].replace(
        "DOE^J1", "Yamada^Tarou^^^^^L^A~山田^太郎^^^^^L^I~やまだ^たろう^^^^^L^P~Yama^T^^^^^A^A")
    (ack,) = send(hl7, "\r".join(segments).encode("utf-8"))
    assert msa(ack)[1] == "AA", ack
    expected = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert Patient.objects.get(patient_id="583295").patient_name == expected
    ApplicationEntity.objects.create(ae_title="MR1", host="127.0.0.1", port=104,
                                     may_query_worklist=True)
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 192"
    query.AccessionNumber = "MOF5026"
    query.PatientName = ""
    ae = AE(ae_title="MR1")
    ae.add_requested_context(MWL)
    assoc = ae.associate(*dimse_listener.address, ae_title="PORTAL")
    try:
        (found,) = [a for s, a in assoc.send_c_find(query, MWL) if s.Status == 0xFF00]
    finally:
        assoc.release()
    name = found.PatientName
    assert (str(name.alphabetic), name.ideographic, name.phonetic) == (
        "Yamada^Tarou", "山田^太郎", "やまだ^たろう")


def test_an_order_no_station_can_take_is_accepted_with_a_warning_and_flagged(
        hl7, samples, web, client_session):
    """An order whose modality has no station (and no IPC-9, no sender default) would wait
    in the worklist where no modality asking by its AE title sees it. It is kept (the RIS
    must not resend it), the ACK says why in an ERR of severity W (HL7 v2.5 table 0516), and
    the day board lists it as unroutable."""
    text = load(samples, "dcm4che_ORM_O01_v231_ihe_rad4.hl7").decode("ascii")
    segments = text.split("\r")
    msh = segments[0].split("|")
    msh[11] = "2.5.1"
    segments[0] = "|".join(msh)
    (ack,) = send(hl7, "\r".join(segments).encode("ascii"))
    assert msa(ack)[1] == "AA"
    warning = err(ack).split("|")
    assert warning[4] == "W" and "no station for modality MR" in warning[8]
    step = ScheduledProcedureStep.objects.get()
    assert step.scheduled_station_ae_title == ""
    from django.urls import reverse

    board = client_session.get(f"{web}{reverse('worklist-board')}", timeout=10, params={
        "date": f"{step.start_date[:4]}-{step.start_date[4:6]}-{step.start_date[6:]}"})
    assert "Unroutable: no station" in board.text and "MOF5026" in board.text
    # with a station of that modality, the same order is routed and acknowledged plainly
    Station.objects.create(ae_title="MR-ROOM-2", name="mr2", modality="MR")
    segments[0] = segments[0].replace("103106", "103107")
    again = "\r".join(segments).replace("MOF5026", "MOF5027")
    (ack,) = send(hl7, again.encode("ascii"))
    assert msa(ack)[1] == "AA" and not err(ack)
