"""PhantomCXR: synthetic chest radiographs with free-text reports and exact lesion locations.

Laterality convention: findings are described from the patient's point of view on a frontal (PA/AP) film, so
the patient's RIGHT side appears on the LEFT of the image (small x), as on a real radiograph.
"""
