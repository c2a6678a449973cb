# The message log arrives with the HL7 gateway issue.
