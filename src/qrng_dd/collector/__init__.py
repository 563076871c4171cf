"""The internal side: fetch from appliances, test, mix, sign, encrypt and push out."""
