"""Media: the only place of mrfa where files, numpy arrays and uint8 images live.

``convert`` (uint8 / float conversions, one rounding rule), ``video`` (image and video reading with one frame
contract, resizing, file discovery), ``writer`` (the one atomic writer and the output-path policy), ``face`` (the
one face stack), ``crop`` / ``paste`` (VoxCeleb crop geometry and paste-back), ``draw`` (visualisation with one
pixel convention). It sits beside ``mrfa.ops`` at the bottom of the import graph: it imports nothing from the model.
"""
