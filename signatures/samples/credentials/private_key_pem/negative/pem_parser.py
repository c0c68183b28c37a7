HEADER = "-----BEGIN RSA PRIVATE KEY-----"

def is_key(text):
    return text.startswith(HEADER)
