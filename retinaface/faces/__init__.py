"""What users do with detected faces: the Face record, head pose, tracking, aligned crops, anonymisation, drawing."""
