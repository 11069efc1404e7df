-- Removes spec.paused rather than setting it false, so that the object is
-- back to what a manifest without the field describes.
obj.spec.paused = nil
return obj
