"""The Avro contract shared by every part: schemas, the codec, topic administration."""
