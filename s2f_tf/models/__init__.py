"""Networks: voice_encoder (Table 1), face_encoder (VGG-Face), face_decoder + warp (Cole et al.),
speech2face (the composition that is exported), factory (config -> objects)."""
